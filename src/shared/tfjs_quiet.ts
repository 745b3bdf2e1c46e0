import * as tf from '@tensorflow/tfjs-core';

// Imported for this effect by the module each gdp command line loads once its flags have parsed.
// tfjs prints notices meant for library users through its log module, which stays quiet under its PROD flag: the cpu
// backend's "Hi, looks like you are running TensorFlow.js in Node.js..." advert on its first tensor (a model.file
// read before --backend starts), flag and kernel re-registration warnings. In tfjs 4.x PROD gates these notices
// only (checks are DEBUG's business); gdp's command lines say what matters in their own lines.
tf.env().set('PROD', true);
