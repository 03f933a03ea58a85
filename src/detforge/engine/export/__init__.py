"""Export to deployment formats (ONNX), each checked against PyTorch after writing."""
