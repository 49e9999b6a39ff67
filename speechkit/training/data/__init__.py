"""Demo-corpus data: text from Debian packages, held-out splits, espeak-ng synthesis, a small tokenizer."""
