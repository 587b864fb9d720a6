"""``realspo annotate``: serve a labeling page for a small team; labels go to a campaign
directory that ``realspo label --annotations DIR`` reads.

Prints one link per annotator (each with its own secret token) and an owner link; a rerun on
the same ``--out`` resumes with the same links. See ``docs/how-to/annotate.md``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from realspo.config import add_options, check_seed, option, resolve
from realspo.errors import ConfigError


@dataclass
class AnnotateConfig:
    pairs: str = option(help="annotation rows from `realspo select` (pair_id, prompt, response_a, "
                             "response_b, ...)", metavar="FILE", path="input")
    out: str = option(help="the campaign directory: created, or resumed if it holds this "
                           "campaign", metavar="DIR", path="output")
    annotators: str = option("annotator", "comma-separated annotator names (letters, digits, "
                                          "'_', '-'), one link each", metavar="NAMES")
    overlap: int = option(1, "how many annotators label each pair (balanced)")
    gold: str | None = option(None, "pairs with a known answer (annotation rows + answer: A, B "
                                    "or tie), mixed into every queue", metavar="FILE",
                              path="input")
    seed: int = option(0, "seed of the assignment and of the shown order")
    host: str = option("127.0.0.1", "address to listen on (any but loopback exposes the "
                                    "page to the network; every request still needs a token)")
    port: int = option(8080, "port to listen on (0: any free port)")
    public_url: str | None = option(None, "the address annotators reach, when a reverse proxy "
                                          "(TLS) stands in front: printed links start with it, "
                                          "e.g. https://label.example.org", metavar="URL")

    def validate(self) -> None:
        check_seed(self.seed)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port}: expected 0 to 65535")
        if not self.host.strip():
            raise ConfigError("--host: empty; give 127.0.0.1 (the default) or an address")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"--public-url {self.public_url}: expected http:// or https://...")
        if self.overlap < 1:
            raise ConfigError(f"--overlap {self.overlap}: expected at least 1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, AnnotateConfig)


def run(args: argparse.Namespace) -> int:
    cfg = resolve(AnnotateConfig, args)
    from realspo.annotate.campaign import CampaignSpec, parse_annotators
    from realspo.annotate.serve import bind, is_loopback, links, serve_campaign

    spec = CampaignSpec(cfg.pairs, parse_annotators(cfg.annotators), cfg.overlap, cfg.gold,
                        cfg.seed)
    if spec.overlap > len(spec.annotators):
        raise ConfigError(f"--overlap {spec.overlap}: more than the {len(spec.annotators)} "
                          "annotator(s) of --annotators")
    sock = bind(cfg.host, cfg.port)  # a port in use stops us before anything is written
    with serve_campaign(spec, cfg.out, sock) as (campaign, created, server):
        gold = len(campaign.key.gold)
        print(f"{'created' if created else 'resumed'} campaign {cfg.out}: "
              f"{len(campaign.key.swapped) - gold} pairs{f' (+ {gold} gold)' if gold else ''}, "
              f"{len(campaign.queues)} annotator(s)")
        for name, url in links(campaign, cfg.host, sock, cfg.public_url).items():
            print(f"  {name or 'owner (progress)'}: {url}")
        if not is_loopback(cfg.host) and not cfg.public_url:
            print(f"listening on {cfg.host}: reachable from the network, without TLS; see "
                  "docs/how-to/annotate.md for a reverse proxy with TLS")
        print("labels are saved as they are given; Ctrl-C stops the server", flush=True)
        server.run(sockets=[sock])
    return 0
