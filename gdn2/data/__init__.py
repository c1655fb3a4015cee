"""Training data: corpora, the tokenizer, and documents packed into rows with ``cu_seqlens``.

    docs = open_corpus("kjv", split="train")             # offline: the King James Bible, by chapter
    tok = Tokenizer.train(docs, vocab_size=4096)         # byte-level BPE, seconds
    data = PackedDataset(docs, tok, seq_len=256, batch_size=8, seed=0)
    batch = next(data)                                   # input_ids, labels [B, T]; cu_seqlens
    state = data.state_dict()                            # save with the checkpoint; load_state_dict resumes

Importing this package needs only torch; the tokenizer and the built-in corpus need
``pip install 'gdn2[data]'``, Parquet files and Hugging Face datasets ``pip install 'gdn2[datasets]'``.
"""

from .corpus import (Documents, file_documents, hf_documents, jsonl_documents, kjv_documents, open_corpus,
                     parquet_documents, select_split, text_documents)
from .packing import IGNORE_INDEX, PackedDataset
from .tokenizer import EOS_TOKEN, PAD_TOKEN, Tokenizer

__all__ = ["Documents", "EOS_TOKEN", "IGNORE_INDEX", "PAD_TOKEN", "PackedDataset", "Tokenizer", "file_documents",
           "hf_documents", "jsonl_documents", "kjv_documents", "open_corpus", "parquet_documents", "select_split",
           "text_documents"]
