"""Collectors (program members): enrolment, status, bulk import."""
