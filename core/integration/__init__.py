"""Integration of rotation data (dials.integrate): profile model, shoeboxes, background,
summation and profile fitting, and the corrections stored with the intensities."""
