"""One line about each prebuilt decision tree, and which one to start from (``zoobot schemas``).

"ortho" trees put the campaign in every column name (``smooth-or-featured-dr5_smooth``), so catalogs of
several campaigns can share one model: each campaign's questions have their own columns and a galaxy
has zero votes for questions it was never asked (docs/data_notes.md). The trees without "ortho" use the
plain GZ2/DECaLS column names of one campaign.

Examples
--------
>>> describe('decals_dr5_ortho')
'GZ DECaLS DR5 volunteer votes (the usual choice for DECaLS/DESI-like images)'
>>> RECOMMENDED
'decals_dr5_ortho'
"""
from __future__ import annotations

__all__ = ["RECOMMENDED", "DESCRIPTIONS", "describe"]

#: The tree to start from: GZ DECaLS DR5, the largest single-campaign set of volunteer votes.
RECOMMENDED = "decals_dr5_ortho"

DESCRIPTIONS = {
    "decals_dr5_ortho": "GZ DECaLS DR5 volunteer votes (the usual choice for DECaLS/DESI-like images)",
    "decals_dr8_ortho": "GZ DECaLS DR8 votes (the DR5 questions, later images)",
    "decals_dr12_ortho": "GZ DECaLS DR1/2 votes (the first DECaLS campaign, an earlier version of the questions)",
    "decals_all_campaigns_ortho": "GZ DECaLS DR1/2 + DR5 + DR8 side by side, to combine campaigns in one model",
    "gz2_ortho": "Galaxy Zoo 2 (SDSS images)",
    "gz2_partial_ortho": "Galaxy Zoo 2, smooth-or-featured question only",
    "gz_candels_ortho": "GZ CANDELS (HST deep fields, high redshift)",
    "gz_hubble_ortho": "GZ Hubble (HST images)",
    "gz_hubble_v2_ortho": "GZ Hubble, revised tree",
    "cosmic_dawn_ortho": "GZ Cosmic Dawn (HSC images)",
    "cosmic_dawn": "GZ Cosmic Dawn (HSC), columns without the campaign suffix",
    "gz_rings": "a single ring yes/no question (the demo's ring votes)",
    "desi": "DESI Legacy Survey galaxies, with the GZ DECaLS questions",
    "gz_evo_v1": "GZ Evo v1: every campaign's questions in one model (pretraining across surveys)",
    "gz_evo_v1_public": "GZ Evo v1, public campaigns only",
    "gz_evo_v2": "GZ Evo v2: every campaign's questions in one model (pretraining across surveys)",
    "gz_evo_v2_public": "GZ Evo v2, public campaigns only",
    "gz_ukidss": "GZ UKIDSS (near-infrared images)",
    "gz_jwst": "GZ JWST CEERS",
    "gz_jwst_cosmos": "GZ JWST COSMOS",
    "euclid_ortho": "GZ Euclid (Euclid space telescope images)",
    "euclid": "GZ Euclid, columns without the campaign suffix",
    "decals": "GZ DECaLS, columns without campaign suffix (one campaign's catalog)",
    "decals_dr8_only": "GZ DECaLS DR8 questions, columns without campaign suffix",
    "decals_dr12": "GZ DECaLS DR1/2, columns without campaign suffix",
    "decals_dr12_only": "GZ DECaLS DR1/2-only questions, columns without campaign suffix",
    "decals_all_campaigns": "GZ DECaLS all campaigns, columns without campaign suffix",
    "gz2": "Galaxy Zoo 2, columns without campaign suffix",
    "gz2_partial": "Galaxy Zoo 2 smooth-or-featured only, columns without campaign suffix",
}


def describe(name: str) -> str:
    """One line about the prebuilt tree ``name`` (empty for a tree without a description)."""
    return DESCRIPTIONS.get(name, "")
