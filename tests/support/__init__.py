"""What several test modules share, one module per concern (fixtures are in ../conftest.py):
images, waiting, processes (CLI, workers, API), metrics, store, webhooks."""
