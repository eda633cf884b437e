"""edgeav.runtime"""
