/* io360 widget */
