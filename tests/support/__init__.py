"""Test support: real SGLang engines and servers, run so that a crash fails a test, not pytest."""
