"""Cloud-side export: Keras/SavedModel -> quantized, self-describing TFLite model package.

Imports TensorFlow lazily (inside functions), so ``import converter`` itself is cheap.
"""
