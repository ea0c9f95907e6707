"""The web UI: a Gradio page over the same search, tagging and export functions as the CLI."""
