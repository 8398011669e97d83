"""engine/serving"""
