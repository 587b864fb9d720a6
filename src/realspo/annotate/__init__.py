"""``realspo annotate``: a labeling page for a small team, served from the user's machine.

``campaign.py`` sets up or resumes a campaign directory (pairs dealt to annotators by
``assignment.py``, the order key, one secret token each from ``tokens.py``); ``journal.py``
appends each answer to the annotator's journal and fsyncs it before the reply; ``queues.py``
holds each annotator's queue in memory (rebuilt from the journals on restart); ``server.py``
is the Starlette app (page, static assets, JSON API, security headers); ``serve.py`` binds the
socket, prints the links and runs uvicorn under the output lock.
"""
