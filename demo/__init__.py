"""The Gradio demo (demo/app.py)."""
