"""Guards: the rule tier (normalisation, rules, PII), the ONNX classifiers, the policies, and
the input and output rails built from them."""
