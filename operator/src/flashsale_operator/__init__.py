"""kopf operator for the FlashSale custom resource (flashsale.dev/v1alpha1)."""
