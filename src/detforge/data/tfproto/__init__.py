"""Protobuf classes for ``tf.train.Example`` and the Object Detection API's label map.

Generated from the ``.proto`` files here (wire-compatible copies of TensorFlow's, Apache-2.0)
with protoc 35.1 from ``grpcio-tools`` 1.85.1, run from ``src/``::

    python -m grpc_tools.protoc -I. --python_out=. detforge/data/tfproto/*.proto

Do not edit the ``*_pb2.py`` files; change a ``.proto`` and re-run the command.
"""
