"""The read-only web UI (`incident-operator ui`): the Incident list, an Incident's
whole story, and analytics over a period.

A process and Deployment of its own, not a route of the webhook: it has its
own identity (a ServiceAccount that may only read Incidents and Events, and
read the timeline), it is off unless asked for, and people's browsers never
share a surface with the alarm senders' public ingest endpoints.

Pages are rendered on the server (Jinja2, escaping on) and work without
JavaScript; one small script of our own (static/ui.js) follows a Server-Sent
Events stream fed by a watch on the API server and refreshes the list in
place. Nothing is loaded from anywhere but this origin (see CONTENT_SECURITY_POLICY).
"""
