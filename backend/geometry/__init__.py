"""Shared geometry, the bottom layer: ``rotations`` (quaternions, matrices, polar rotation),
``triangles`` (closest points, nearest triangles, incident faces, normals) and ``raster`` (the
mesh z-buffer). Imports torch (and scipy) only, never another backend package."""
