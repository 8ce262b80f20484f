"""End-to-end workflows (data -> fit -> evaluate -> run directory) that experiments configure."""
