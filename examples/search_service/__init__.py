"""A search service over the demo's index: a FastAPI JSON API and one HTML page.

Build the index with ``make demo``, then ``make serve`` (or
``python -m examples.search_service``) and open http://127.0.0.1:8000.
"""
