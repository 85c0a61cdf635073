"""Sample-quality metrics: a reference classifier gentool trains itself per data set (its features and class
probabilities), Fréchet and kernel distances, inception-style score, precision/recall, mode coverage, pixel-level
distances, the `gentool evaluate` orchestration and the training watch (`train --eval-every`)."""
