"""The account use cases: signup, verification, password reset and change, email change,
deletion."""
