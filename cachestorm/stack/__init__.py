"""cachestorm/stack"""
