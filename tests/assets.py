"""Test assets: small real models and scikit-image sample images, built once and cached."""
