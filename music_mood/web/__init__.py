"""The web page: one module per tab (recommend_tab, slideshow_tab, library_tab), assembled by page and served by
server; views renders their HTML and Markdown without Gradio."""
