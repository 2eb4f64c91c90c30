def verify_cmd(): pass
