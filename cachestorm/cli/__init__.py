"""cachestorm/cli"""
