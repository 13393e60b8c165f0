"""napari plugin: open microscope files through `hrtem3d.io`, segment the current image or movie.

Installed with the `napari` extra (`pip install 'hrtem3d[napari]'`); napari finds it through the
`napari.manifest` entry point (`napari.yaml` in this folder). The reader gives each layer its
scale in Å per pixel and `metadata["pixel_size_A"]`; the widget "Segment columns" adds a Points
layer, one point per atomic column, coloured by atoms in the column, with the column table as its
features.
"""
