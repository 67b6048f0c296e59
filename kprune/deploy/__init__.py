"""Deployment: ONNX export (fused, verified, int8) and the graph passes after fusion."""
