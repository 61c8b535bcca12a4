"""Everything Slack, in one place.

- `api.py`: the Web API client and how it is called (failures, retries).
- `blocks.py`: what a message shows: the Incident's blocks and buttons, thread
  replies, what a click is answered with.
- `channel.py`: the notification channel: one message per Incident, kept
  current, its story in the thread.
- `actions.py`: `POST /slack/actions`, the buttons (signature checked first):
  approve, reject, acknowledge, silence, view the timeline.
"""
