"""stylequeue's engine (VGG19 + L-BFGS style transfer) and, later, its Celery worker."""
