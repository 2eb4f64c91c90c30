def robustify_cmd(): pass
