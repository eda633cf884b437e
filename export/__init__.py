"""edgeav.export"""
