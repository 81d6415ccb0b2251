"""Stage 2's mathematics and stage: count sketch, second- and third-order pooling, eigenvalue power
normalisation (EPN), the scikit-learn transformers, and the descriptors stage."""
