<?php
// The blog's front controller, as WordPress ships it.
define('WP_USE_THEMES', true);
require __DIR__ . '/wp-blog-header.php';
