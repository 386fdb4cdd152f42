"""Experimental models in the DIALS/dxtbx laboratory frame."""
