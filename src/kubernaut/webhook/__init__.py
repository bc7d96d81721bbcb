"""The admission webhook server: AdmissionReview over HTTPS for our kinds."""
