# Flower 2.0.1, standing in for mher/flower:2.0.1.
FROM localhost/stylequeue-python:3.11
RUN pip install --no-cache-dir --quiet "flower==2.0.1" "celery[redis]>=5.5"
CMD ["celery", "flower"]
