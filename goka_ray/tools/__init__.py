"""What users run: the ``goka-ray`` CLI, the web monitor, the demo, the local dev broker."""
