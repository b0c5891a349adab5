"""What a sweep measured: rows and their log, the choice per point, and tables, comparisons and plots of them."""
