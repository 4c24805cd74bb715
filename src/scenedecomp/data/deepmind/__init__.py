"""DeepMind's multi-object datasets: TFRecord framing (:mod:`.tfrecord`, its CRC32C/inflate backends in
:mod:`.tfrecord_backends`), ``tf.train.Example`` parsing (:mod:`.example_proto`), the datasets' schemas
(:mod:`.multi_object`) and the conversion to HDF5 (:mod:`.convert`), all without TensorFlow."""
