"""Vector stores: where product vectors live and are searched with filters. Chapter 12."""
