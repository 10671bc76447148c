"""The edge: the CLI, the client helpers, the HTTP stack and webhooks, the dev server,
status views, observability and the Temporal connection. It reads the settings once
and passes them down; nothing below imports it."""
