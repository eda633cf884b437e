"""edgeav.train"""
