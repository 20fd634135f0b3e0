"""Live camera + microphone: sources stamped by one stream clock, a session that encodes each chunk
once as it arrives and keeps the media prefix in the KV cache across questions, triggers, the web
console and the `vinci-edge live` command."""
