"""engine/offline"""
