"""Procedural datasets: 2D sprites and shapes, objects_room-like 3D rooms and multi-MNIST, generated from a seed
(over the shared toolkit in :mod:`.procedural`) and cached as arrays."""
