"""İYS Push: receiving citizen-side movements as they happen (receiver, inbox, registration)."""
