"""What one worker process keeps for itself: objects made once per process (and anew in a
forked child), the items it holds under its heartbeat token, and its memory guard."""
