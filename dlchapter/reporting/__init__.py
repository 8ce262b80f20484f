"""Run directories, figures, summaries, scores and event files."""
