"""``realspo annotate``: a labeling page for a small team, served from the user's machine.

``campaign.py`` sets up or resumes a campaign directory (pairs assigned to annotators, the
order key, one secret token each); ``journal.py`` appends each answer to the annotator's
journal and fsyncs it before the reply; ``queues.py`` holds each annotator's queue in
memory (rebuilt from the journals on restart); ``server.py`` is the Starlette app (page,
static assets, JSON API, security headers).
"""
