"""Tests of the Singer targets."""
