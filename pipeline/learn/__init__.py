"""What learns from cached features: heads (SVM, logreg, linear, MLP), the attention poolings trained
end to end (attention/, a registry), evaluation per split, training and prediction."""
