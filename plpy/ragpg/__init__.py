"""ragpg: the Python engine room behind the `rag` Postgres extension.

The data path, one module per stage:
    text.py      document -> plain text (markdown kept, HTML converted with structure)
    chunking.py  text -> chunks that fit the embedding model's input window
    embedding.py chunks / queries -> vectors (all-MiniLM-L6-v2, ONNX int8, in-process)
    indexing.py  documents -> rows in rag.chunks (called by the triggers, via plpy)
    answer.py    retrieved chunks -> answer with [n] citations (extractive, no LLM)

SQL in sql/ is the public interface; these modules are imported by PL/Python function
bodies and by unit tests, which need no database.
"""

__version__ = "0.12.0"
